//! The committed configurations in `envoy/`: every Envoy bootstrap passes `envoy --mode validate`
//! with its placeholders filled in (see envoy/README.md), `gateway.yaml` and `behind-proxy.yaml`
//! actually run and enforce bound tokens, and the Istio manifests parse, have the expected kinds,
//! and carry plugin configurations the real filter accepts.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{forge, issuer, now, p256, proof_header, public_jwk, unique};
use keybound_core::dpop;
use keybound_core::jws::{self, Signer};
use keybound_e2e::issuer::IssuerServer;
use keybound_e2e::tls::FRONT_URI;
use keybound_e2e::{
    Envoy, EnvoyOptions, Identity, Pki, Response, TempDir, Upstream, envoy_module, filter_wasm, free_port, request,
    request_tls, root, validate_with, validate_yaml,
};
use serde::Deserialize;
use serde_json::{Value, json};

const ISS: &str = "https://as.example.com";
const AUD: &str = "https://api.example.com";

fn envoy_dir() -> PathBuf {
    root().join("envoy")
}

/// The placeholder files of envoy/README.md, made from the test PKI and the built filter.
fn placeholder_files(pki: &Pki) -> TempDir {
    let dir = TempDir::new("etc-keybound").unwrap();
    let put = |rel: &str, from: &Path| {
        let to = dir.0.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    let pair = |name: &str, id: &Identity| {
        put(&format!("{name}.pem"), &id.cert);
        put(&format!("{name}.key"), &id.key);
    };
    pair("tls/server", &pki.gateway);
    pair("tls/front", &pki.front);
    put("tls/client-ca.pem", &pki.ca);
    put("mesh/ca.pem", &pki.mesh_ca);
    pair("mesh/front", &pki.mesh_front);
    pair("mesh/gateway", &pki.mesh_gateway);
    std::os::unix::fs::symlink(filter_wasm().unwrap(), dir.0.join("keybound_filter.wasm")).unwrap();
    std::os::unix::fs::symlink(envoy_module().unwrap(), dir.0.join("libkeybound_envoy_module.so")).unwrap();
    dir
}

/// Fills in the placeholders of a committed file (paths and the SPIFFE domain).
fn fill(text: &str, files: &TempDir, pki: &Pki) -> String {
    let out = text
        .replace("/etc/keybound/", &format!("{}/", files.0.display()))
        .replace("/etc/ssl/certs/ca-certificates.crt", &pki.ca.display().to_string())
        .replace("spiffe://keybound.example/", "spiffe://keybound.test/")
        // The origin clients call: the test client sends `host: rs.example.com`.
        .replace("\"https://api.example.com:8443\"", "\"https://rs.example.com\"");
    assert!(!out.contains("/etc/keybound") && !out.contains("keybound.example"));
    out
}

/// Ports of a running copy.
struct Ports {
    listener: u16,
    inner: u16,
    admin: u16,
}

/// Makes a filled-in bootstrap runnable here: free ports on 127.0.0.1, the application at
/// `app_port`, and the issuer cluster as plain HTTP to the local `IssuerServer` at `issuer_port`.
fn runnable(filled: &str, app_port: u16, issuer_port: u16) -> (String, Ports) {
    let ports = Ports {
        listener: free_port().unwrap(),
        inner: free_port().unwrap(),
        admin: free_port().unwrap(),
    };
    let text = filled
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
        .replace("port_value: 8443 ", &format!("port_value: {} ", ports.listener))
        .replace("port_value: 10443 ", &format!("port_value: {} ", ports.inner))
        .replace("port_value: 9901 ", &format!("port_value: {} ", ports.admin))
        .replace("port_value: 8080 ", &format!("port_value: {app_port} "))
        .replace(
            "https://as.example.com/.well-known/jwks.json",
            "http://as.example.com/jwks",
        );
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let clusters = doc["static_resources"]["clusters"].as_sequence_mut().unwrap();
    let issuer = clusters.iter_mut().find(|c| c["name"] == "issuer").unwrap();
    let issuer = issuer.as_mapping_mut().unwrap();
    issuer.remove("transport_socket");
    issuer.remove("dns_lookup_family");
    issuer.insert("type".into(), "STATIC".into());
    let endpoint = &mut issuer["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
    endpoint["address"]["socket_address"] =
        serde_yaml::from_str(&format!("{{address: 127.0.0.1, port_value: {issuer_port}}}")).unwrap();
    (serde_yaml::to_string(&doc).unwrap(), ports)
}

fn issuer_jwks() -> String {
    let mut jwk = public_jwk(&issuer());
    jwk["kid"] = json!("k1");
    json!({ "keys": [jwk] }).to_string()
}

fn token(cnf: Value, scope: &str) -> String {
    let n = now();
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "iat": n, "exp": n + 600,
        "jti": unique("t"), "scope": scope, "cnf": cnf});
    jws::sign_json(&issuer(), Some("at+jwt"), Some("k1"), &claims).unwrap()
}

fn dpop_proof(key: &dyn Signer, method: &str, url: &str, token: &str) -> String {
    let claims = json!({"jti": unique("p"), "htm": method, "htu": url, "iat": now(),
        "ath": dpop::access_token_hash(token)});
    forge(key, &proof_header(key), &claims)
}

fn tls_get(port: u16, pki: &Pki, client: Option<&Identity>, headers: &[(&str, &str)]) -> Response {
    request_tls(port, pki, client, "GET", "/accounts/42", headers).unwrap()
}

#[test]
fn every_committed_envoy_config_passes_envoy_validate() {
    let pki = Pki::generate().unwrap();
    let files = placeholder_files(&pki);
    let mut files_seen = Vec::new();
    for entry in std::fs::read_dir(envoy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            files_seen.push(path);
        }
    }
    // Each validation compiles the filter in V8 (about a second): run them side by side.
    std::thread::scope(|s| {
        let runs: Vec<_> = files_seen
            .iter()
            .map(|path| {
                let filled = fill(&std::fs::read_to_string(path).unwrap(), &files, &pki);
                // A broken filter configuration in the same file must be refused, naming the field;
                // in the front tier (no filter), a broken hash policy.
                let (from, to, name) =
                    if filled.contains("keybound_filter.wasm") || filled.contains("libkeybound_envoy_module.so") {
                        ("\"rules\": [", "\"rulez\": [", "rulez")
                    } else {
                        ("header_name: authorization", "header_nam: authorization", "header_nam")
                    };
                let broken = filled.replacen(from, to, 1);
                assert_ne!(filled, broken);
                let good = s.spawn(move || validate_yaml(&filled).unwrap());
                let bad = s.spawn(move || validate_yaml(&broken).unwrap());
                (path, good, bad, name)
            })
            .collect();
        for (path, good, bad, name) in runs {
            let (ok, out) = good.join().unwrap();
            assert!(ok && out.contains("OK"), "{}: {out}", path.display());
            let (ok, out) = bad.join().unwrap();
            assert!(
                !ok && out.contains(name),
                "{}: broken config accepted: {out}",
                path.display()
            );
        }
    });
    let mut seen: Vec<String> = files_seen
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "behind-proxy.yaml",
            "front-tier.yaml",
            "gateway-module.yaml",
            "gateway.yaml"
        ]
    );
}

#[test]
fn gateway_yaml_runs_and_enforces_dpop_and_certificate_bound_tokens() {
    let pki = Pki::generate().unwrap();
    let files = placeholder_files(&pki);
    let app = Upstream::start().unwrap();
    let idp = IssuerServer::start(&issuer_jwks(), "Basic unused").unwrap();
    let text = std::fs::read_to_string(envoy_dir().join("gateway.yaml")).unwrap();
    let (yaml, ports) = runnable(&fill(&text, &files, &pki), app.port, idp.port);
    let envoy = Envoy::start_yaml(&yaml, ports.listener, ports.admin).unwrap();

    // The health route needs no token.
    let r = request_tls(ports.listener, &pki, None, "GET", "/healthz", &[]).unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // DPoP-bound token, keys fetched from the issuer's jwks_uri through the `issuer` cluster.
    let key = p256(31);
    let t = token(
        json!({"jkt": key.public_key().thumbprint().to_string()}),
        "accounts:read",
    );
    let url = "https://rs.example.com/accounts/42";
    let r = tls_get(
        ports.listener,
        &pki,
        None,
        &[
            ("authorization", &format!("DPoP {t}")),
            ("dpop", &dpop_proof(&key, "GET", url, &t)),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    assert_eq!(r.json()["x-keybound-binding"], "dpop");
    assert!(!idp.jwks_calls().is_empty());

    // Certificate-bound token over the listener's optional mTLS.
    let t = token(json!({"x5t#S256": pki.alice.x5t_s256()}), "accounts:read");
    let auth = format!("Bearer {t}");
    let r = tls_get(ports.listener, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    assert_eq!(r.json()["x-keybound-x5t-s256"], pki.alice.x5t_s256());
    for client in [Some(&pki.bob), None] {
        let r = tls_get(ports.listener, &pki, client, &[("authorization", &auth)]);
        assert_eq!(r.status, 401, "{r:?}");
    }
    // Writing needs accounts:write.
    let r = request_tls(
        ports.listener,
        &pki,
        Some(&pki.alice),
        "POST",
        "/accounts",
        &[("authorization", &auth)],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            r#"Bearer error="insufficient_scope", scope="accounts:write", resource_metadata="https://rs.example.com/.well-known/oauth-protected-resource""#
        )
    );
    // Allowed: the health check (auth "none" counts too), the DPoP and the mTLS request.
    assert_eq!(envoy.decisions("allow", None), 3);
    assert_eq!(envoy.decisions("deny", None), 3);
    // The listener is TLS only.
    assert!(request(ports.listener, "GET", "/healthz", &[]).is_err());

    // The /reports route names its requirement in its metadata; it is in report mode: a request
    // without a token reaches the application, marked with the decision it would have had.
    let r = request_tls(ports.listener, &pki, None, "GET", "/reports/1", &[]).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["x-keybound-decision"], "deny");
    assert_eq!(r.json()["x-keybound-reason"], "missing_credentials");
    // RFC 9728 metadata, and a refusal readable by the configured web app's origin.
    let r = request_tls(
        ports.listener,
        &pki,
        None,
        "GET",
        "/.well-known/oauth-protected-resource",
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["resource"], "https://rs.example.com");
    assert_eq!(r.json()["tls_client_certificate_bound_access_tokens"], true);
    let r = request_tls(
        ports.listener,
        &pki,
        None,
        "GET",
        "/accounts",
        &[("origin", "https://app.example.com")],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert!(
        r.header("www-authenticate").is_some_and(
            |w| w.contains("resource_metadata=\"https://rs.example.com/.well-known/oauth-protected-resource\"")
        ),
        "{r:?}"
    );
    // Its stats_tags make labelled Prometheus series.
    let prom = request(ports.admin, "GET", "/stats/prometheus", &[]).unwrap().body;
    assert!(
        prom.contains(r#"keybound_requests_total{decision="deny",reason="missing_credentials",requirement="reports",mode="report"} 1"#),
        "{prom}"
    );
}

#[test]
fn behind_proxy_yaml_runs_and_trusts_xfcc_only_from_its_front() {
    let pki = Pki::generate().unwrap();
    let files = placeholder_files(&pki);
    let app = Upstream::start().unwrap();
    let idp = IssuerServer::start(&issuer_jwks(), "Basic unused").unwrap();
    let text = std::fs::read_to_string(envoy_dir().join("behind-proxy.yaml")).unwrap();
    let (yaml, ports) = runnable(&fill(&text, &files, &pki), app.port, idp.port);
    let envoy = Envoy::start_yaml(&yaml, ports.listener, ports.admin).unwrap();
    let auth = format!(
        "Bearer {}",
        token(json!({"x5t#S256": pki.alice.x5t_s256()}), "accounts:read")
    );
    let forged = format!("By={FRONT_URI};Hash={}", pki.alice.sha256_hex());

    // Alice through the front: allowed, the gateway saw the front's XFCC.
    let r = tls_get(ports.listener, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    let seen = r.json();
    assert_eq!(seen["x-keybound-binding"], "mtls");
    assert!(
        seen["x-forwarded-client-cert"].as_str().unwrap().starts_with(&forged),
        "{seen}"
    );
    // Bob, with or without a forged XFCC naming Alice's certificate: refused.
    for headers in [
        vec![("authorization", auth.as_str())],
        vec![("authorization", auth.as_str()), ("x-forwarded-client-cert", &forged)],
    ] {
        let r = tls_get(ports.listener, &pki, Some(&pki.bob), &headers);
        assert_eq!(r.status, 401, "{r:?}");
    }
    // No certificate at the front and a forged XFCC: refused.
    let r = tls_get(
        ports.listener,
        &pki,
        None,
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(envoy.decisions("deny", Some("certificate_mismatch")), 2);
    assert_eq!(envoy.decisions("deny", Some("certificate_required")), 1);
    // Straight to the gateway listener: only the front's mesh certificate gets through the
    // handshake, so a forged XFCC never reaches the filter, with or without a client certificate.
    for client in [None, Some(&pki.alice), Some(&pki.front)] {
        let r = request_tls(
            ports.inner,
            &pki,
            client,
            "GET",
            "/accounts/42",
            &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
        );
        assert!(r.is_err(), "{r:?}");
    }
    assert_eq!(envoy.decisions("allow", None), 1);
    assert_eq!(envoy.decisions("deny", None), 3);
}

/// Every HTTP connection manager configuration (`typed_config` of that type) in a YAML tree.
fn connection_managers(v: &serde_yaml::Value, out: &mut Vec<serde_yaml::Value>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            if m.get("@type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.ends_with("HttpConnectionManager"))
            {
                out.push(v.clone());
            }
            for (_, child) in m {
                connection_managers(child, out);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|c| connection_managers(c, out)),
        _ => {}
    }
}

/// Issue 12, item 1: every Envoy we ship (envoy/*.yaml, and Istio's gateways and sidecars
/// through hardening.yaml) normalises paths and refuses escaped slashes and underscores in
/// header names, on every HTTP connection manager. (The demo's generated bootstrap is checked in
/// keybound-demo, docker-compose runs that one.)
#[test]
fn every_shipped_envoy_normalises_paths_and_refuses_underscores() {
    let mut checked = Vec::new();
    let mut docs: Vec<(String, serde_yaml::Value)> = Vec::new();
    for entry in std::fs::read_dir(envoy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            docs.push((path.display().to_string(), serde_yaml::from_str(&text).unwrap()));
        }
    }
    docs.extend(istio_documents().into_iter().filter(|(f, _)| f == "hardening.yaml"));
    // Every Envoy configuration of the wasm filter has the stats_tags that make Prometheus labels
    // of the decision counters (README: "Metrics in Prometheus"), exactly as the harness's. The
    // native module's counters carry their labels as Envoy tags (gateway-module.yaml).
    let ours: serde_yaml::Value = serde_yaml::from_str(&format!(
        "stats_config:\n{}",
        keybound_filter::metrics::stats_tags_yaml()
    ))
    .unwrap();
    for (file, doc) in docs
        .iter()
        .filter(|(f, _)| f.ends_with(".yaml") && !f.ends_with("hardening.yaml") && !f.ends_with("gateway-module.yaml"))
    {
        assert_eq!(
            doc["stats_config"], ours["stats_config"],
            "{file}: stats_config.stats_tags"
        );
    }
    for (file, doc) in &docs {
        let mut hcms = Vec::new();
        connection_managers(doc, &mut hcms);
        assert!(!hcms.is_empty(), "{file}: no HTTP connection manager");
        for hcm in &hcms {
            assert_eq!(hcm["normalize_path"], true, "{file}");
            assert_eq!(hcm["merge_slashes"], true, "{file}");
            assert_eq!(hcm["path_with_escaped_slashes_action"], "REJECT_REQUEST", "{file}");
            assert_eq!(
                hcm["common_http_protocol_options"]["headers_with_underscores_action"], "REJECT_REQUEST",
                "{file}"
            );
        }
        checked.push((file.clone(), hcms.len()));
    }
    // gateway.yaml, gateway-module.yaml and front-tier.yaml have one listener, behind-proxy.yaml
    // two; Istio: gateways and sidecars.
    let mut counts: Vec<usize> = checked.iter().map(|(_, n)| *n).collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 1, 2, 2], "{checked:?}");
    let contexts: Vec<String> = istio_documents()
        .iter()
        .filter(|(f, _)| f == "hardening.yaml")
        .flat_map(|(_, d)| d["spec"]["configPatches"].as_sequence().unwrap().clone())
        .map(|p| p["match"]["context"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(contexts, ["GATEWAY", "SIDECAR_INBOUND"]);
}

/// Every document of every `envoy/istio/*.yaml`, with its file name.
fn istio_documents() -> Vec<(String, serde_yaml::Value)> {
    let mut docs = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(envoy_dir().join("istio"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            docs.push((name.clone(), value));
        }
    }
    docs
}

#[test]
fn istio_manifests_parse_with_the_expected_kinds_and_plugin_configs_the_filter_accepts() {
    let docs = istio_documents();
    let kinds: Vec<(String, String)> = docs
        .iter()
        .map(|(f, d)| (f.clone(), d["kind"].as_str().unwrap_or("?").to_owned()))
        .collect();
    let expected = [
        ("hardening.yaml", "EnvoyFilter"),
        ("issuer.yaml", "ServiceEntry"),
        ("issuer.yaml", "DestinationRule"),
        ("mtls-xfcc.yaml", "Gateway"),
        ("mtls-xfcc.yaml", "VirtualService"),
        ("mtls-xfcc.yaml", "PeerAuthentication"),
        ("mtls-xfcc.yaml", "AuthorizationPolicy"),
        ("telemetry.yaml", "IstioOperator"),
        ("wasmplugin-gateway.yaml", "WasmPlugin"),
        ("wasmplugin-workload.yaml", "WasmPlugin"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(f, k)| ((*f).into(), (*k).into())).collect();
    assert_eq!(kinds, expected);
    for (file, d) in &docs {
        assert!(d["apiVersion"].as_str().is_some(), "{file}: apiVersion");
        assert!(d["metadata"]["name"].as_str().is_some(), "{file}: metadata.name");
    }
    let find = |kind: &str| {
        docs.iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
    };
    // Mesh mTLS is strict, the gateway asks for client certificates, and only the ingress
    // gateway may call the workload.
    assert_eq!(find("PeerAuthentication")[0]["spec"]["mtls"]["mode"], "STRICT");
    assert_eq!(
        find("Gateway")[0]["spec"]["servers"][0]["tls"]["mode"],
        "OPTIONAL_MUTUAL"
    );
    let principals = &find("AuthorizationPolicy")[0]["spec"]["rules"][0]["from"][0]["source"]["principals"];
    assert_eq!(
        principals.as_sequence().unwrap().len(),
        1,
        "only the ingress gateway: {principals:?}"
    );
    let se = find("ServiceEntry")[0];
    let cluster = format!(
        "outbound|{}||{}",
        se["spec"]["ports"][0]["number"].as_u64().unwrap(),
        se["spec"]["hosts"][0].as_str().unwrap()
    );

    let plugins = find("WasmPlugin");
    for p in &plugins {
        let spec = &p["spec"];
        assert_eq!(p["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(spec["phase"], "AUTHN");
        assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
        assert!(spec["url"].as_str().unwrap().starts_with("oci://"));
        assert!(spec["selector"]["matchLabels"].as_mapping().is_some());
        // The plugin configuration, as Istio hands it to the filter (JSON), loaded by the real
        // filter in Envoy; its JWKS cluster is the ServiceEntry's.
        let config: Value = serde_json::to_value(&spec["pluginConfig"]).unwrap();
        let jwks_cluster = config["issuers"][0]["jwks_cluster"].as_str().unwrap().to_owned();
        assert_eq!(jwks_cluster, cluster);
        // The VM's environment as Istio gives it (vmConfig.env, from the proxy's environment,
        // which a Kubernetes Secret fills): a value for every variable named.
        let vm_env = common::wasmplugin_vm_env(spec);
        let opts = EnvoyOptions {
            clusters: vec![(jwks_cluster, free_port().unwrap())],
            vm_env: vm_env.clone(),
            ..EnvoyOptions::default()
        };
        let (ok, out) = validate_with(&config.to_string(), &opts).unwrap();
        assert!(ok, "{}: {out}", p["metadata"]["name"].as_str().unwrap());
        // The same with a typo is refused, naming the field: the check above is not vacuous.
        let mut typo = config.clone();
        typo["mtls"]["elemnt_from_end"] = json!(1);
        let (ok, out) = validate_with(&typo.to_string(), &opts).unwrap();
        assert!(!ok && out.contains("elemnt_from_end"), "{out}");
        // Without the proxy's environment, a plugin that reads a secret from it is refused.
        if !vm_env.is_empty() {
            let bare = EnvoyOptions {
                vm_env: Vec::new(),
                ..opts.clone()
            };
            let (ok, out) = validate_with(&config.to_string(), &bare).unwrap();
            assert!(!ok && out.contains("secrets_from_env"), "{out}");
        }
    }
    // The telemetry snippet: the counters are kept (proxyStatsMatcher) and their tags become
    // labels (extraStatTags, which Istio renders as `(<tag>=\.=(.*?);\.;)` regexes: exactly the
    // stats_tags every Envoy configuration of ours has, tested by scraping in gateway.rs).
    let telemetry = find("IstioOperator")[0];
    let defaults = &telemetry["spec"]["meshConfig"]["defaultConfig"];
    let tags: Vec<&str> = defaults["extraStatTags"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, keybound_filter::metrics::LABELS);
    let rendered: String = std::iter::once("  stats_tags:\n".to_owned())
        .chain(
            tags.iter()
                .map(|t| format!("  - tag_name: {t}\n    regex: \"({t}=\\\\.=(.*?);\\\\.;)\"\n")),
        )
        .collect();
    assert_eq!(rendered, keybound_filter::metrics::stats_tags_yaml());
    let prefixes = defaults["proxyStatsMatcher"]["inclusionPrefixes"]
        .as_sequence()
        .unwrap();
    let counter = format!(
        "wasmcustom.{}",
        keybound_filter::metrics::decision_counter("allow", "ok", "default", "enforce")
    );
    assert!(
        prefixes.iter().any(|p| counter.starts_with(p.as_str().unwrap())),
        "{counter} kept by {prefixes:?}"
    );
    let sources: Vec<&str> = plugins
        .iter()
        .map(|p| p["spec"]["pluginConfig"]["mtls"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["connection", "xfcc"]);
}
