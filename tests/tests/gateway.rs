//! The gateway as platform teams run it (issue 13), in a real Envoy: requirements chosen by the
//! Envoy route (metadata and name) and by host rules; report mode and `allow_missing` for a safe
//! rollout; CORS preflights and readable refusals; claims, the payload and `Authorization` for
//! the upstream; the decision in filter state for access logs and RBAC; labelled Prometheus
//! series; RFC 9728 metadata; secrets from the VM's environment.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{config, dpop_token, eventually, p256, proof, sign_token, token_claims};
use keybound_core::jws::Signer;
use keybound_e2e::{Adapter, Envoy, EnvoyOptions, Response, TempDir, Upstream, request, validate_with};
use serde_json::json;

const API: &str = "http://rs.example.com";

/// Routes: `/meta-open` names requirement `open` in its metadata, the route `payments-route`
/// (`/pay`) is mapped by name, everything else goes to the upstream.
const ROUTES: &str = r#"              - match: { prefix: "/meta-open" }
                metadata: { filter_metadata: { keybound: { requirement: open } } }
                route: { cluster: upstream }
              - match: { prefix: "/pay" }
                name: payments-route
                route: { cluster: upstream }
              - match: { prefix: "/" }
                route: { cluster: upstream }
"#;

/// RBAC after keybound: a request whose token was an unbound bearer token is refused, read from
/// the filter state keybound wrote.
fn rbac() -> String {
    format!(
        r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  bearer-tokens:
                    permissions: [{{ any: true }}]
                    principals:
                    - filter_state: {{ key: {}, string_match: {{ exact: bearer }} }}
"#,
        Adapter::from_env().filter_state_key("binding")
    )
}

fn gateway_config() -> String {
    config(json!({
        "requirements": {
            "open": {"disabled": true},
            "payments": {"scopes": ["payments"], "binding": "dpop", "mode": "report"},
            "legacy": {"allow_bearer": true},
        },
        "routes": {"metadata": true, "names": {"payments-route": "payments"}},
        "rules": [
            {"hosts": ["*.internal.example"], "prefix": "/", "requirement": "open"},
            {"prefix": "/optional", "allow_missing": true},
            {"prefix": "/legacy", "requirement": "legacy"},
        ],
        "cors": {"allowed_origins": ["https://app.example"]},
        "forward": {"claims": {"x-client": "/client_id", "x-first-scope": "/scope"},
            "payload_header": "x-jwt-payload", "authorization": "bearer"},
        "filter_state": true,
        "resource_metadata": [{"resource": API, "authorization_servers": [common::ISS], "scopes_supported": ["accounts:read"]}],
    }))
}

fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Response {
    request(envoy.port, "GET", path, headers).unwrap()
}

fn dpop_call(envoy: &Envoy, key: &dyn Signer, token: &str, path: &str, extra: &[(&str, &str)]) -> Response {
    let p = proof(key, "GET", &format!("{API}{path}"), token);
    let auth = format!("DPoP {token}");
    let mut h = vec![("authorization", auth.as_str()), ("dpop", p.as_str())];
    h.extend_from_slice(extra);
    get(envoy, path, &h)
}

#[test]
fn routes_hosts_report_mode_cors_claims_filter_state_and_prometheus() {
    let up = Upstream::start().unwrap();
    let dir = TempDir::new("kb-gateway").unwrap();
    let access_log = dir.0.join("access.log");
    let opts = EnvoyOptions {
        routes: Some(ROUTES.into()),
        filters_after: rbac(),
        access_log: Some((access_log.clone(), {
            let k = |n: &str| Adapter::from_env().filter_state_key(n);
            format!(
                "%REQ(:PATH)% %RESPONSE_CODE% decision=%FILTER_STATE({}:PLAIN)% \
                 reason=%FILTER_STATE({}:PLAIN)% requirement=%FILTER_STATE({}:PLAIN)% \
                 mode=%FILTER_STATE({}:PLAIN)% sub=%FILTER_STATE({}:PLAIN)%",
                k("decision"),
                k("reason"),
                k("requirement"),
                k("mode"),
                k("sub")
            )
        })),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&gateway_config(), &up, &opts).unwrap();
    let key = p256(1);
    let t = dpop_token(&key);

    // 1. The route decides: metadata, then the route's name; then rules on hosts; else default.
    assert_eq!(get(&envoy, "/meta-open/x", &[]).status, 200, "{}", envoy.log_tail());
    let r = get(&envoy, "/anything", &[]);
    assert_eq!(r.status, 401);
    let r = get(&envoy, "/anything", &[("host", "db.internal.example")]);
    assert_eq!(r.status, 200, "a host rule opens it");
    let r = get(&envoy, "/anything", &[("host", "internal.example")]);
    assert_eq!(
        r.status, 400,
        "*.internal.example needs a subdomain; then the default applies, and this is no configured origin"
    );

    // 2. Report mode (payments, by route name): a token without the scope is forwarded, marked.
    let r = dpop_call(&envoy, &key, &t, "/pay/1", &[("x-keybound-decision", "allow")]);
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["x-keybound-decision"], "deny", "{seen}");
    assert_eq!(seen["x-keybound-reason"], "insufficient_scope");
    assert!(
        seen.get("x-keybound-sub").is_none(),
        "no claims of a refused request: {seen}"
    );
    let r = get(&envoy, "/pay/2", &[]);
    assert_eq!(
        (r.status, r.json()["x-keybound-reason"].as_str()),
        (200, Some("missing_credentials"))
    );

    // allow_missing: nothing at all passes without claims; a bad credential does not.
    let r = get(&envoy, "/optional/a", &[("x-keybound-sub", "mallory")]);
    assert_eq!(r.status, 200);
    assert!(r.json().get("x-keybound-sub").is_none());
    assert_eq!(
        get(&envoy, "/optional/a", &[("authorization", "Bearer junk")]).status,
        401
    );
    assert_eq!(dpop_call(&envoy, &key, &t, "/optional/a", &[]).status, 200);

    // 3. CORS: a preflight reaches the upstream untouched; a refusal is readable by the page.
    let pre = request(
        envoy.port,
        "OPTIONS",
        "/api",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .unwrap();
    assert_eq!(pre.status, 200);
    assert_eq!(pre.json()["origin"], "https://app.example", "the upstream answered it");
    let r = get(&envoy, "/api", &[("origin", "https://app.example")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("WWW-Authenticate, DPoP-Nonce")
    );
    let r = get(&envoy, "/api", &[("origin", "https://evil.example")]);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // 4. Claims by pointer, the payload, Authorization rewritten for a Bearer-only upstream.
    let r = dpop_call(&envoy, &key, &t, "/api/x", &[("x-client", "forged")]);
    assert_eq!(r.status, 200, "{}", envoy.log_tail());
    let seen = r.json();
    assert_eq!(seen["x-client"], "client-1");
    assert_eq!(seen["x-first-scope"], "accounts:read");
    assert_eq!(seen["x-jwt-payload"].as_str(), t.split('.').nth(1));
    assert_eq!(seen["authorization"], format!("Bearer {t}"));
    // RBAC reads the filter state: an unbound bearer token passes keybound (legacy allows it)
    // and is refused by RBAC after it.
    let bearer = sign_token(&token_claims(None));
    let r = get(&envoy, "/legacy", &[("authorization", &format!("Bearer {bearer}"))]);
    assert_eq!(r.status, 403, "RBAC on wasm.keybound.binding: {r:?}");
    assert_eq!(dpop_call(&envoy, &key, &t, "/legacy", &[]).status, 200);

    // 5. Prometheus: labelled series of the decisions.
    let prom = request(envoy.admin, "GET", "/stats/prometheus", &[]).unwrap().body;
    for series in [
        r#"keybound_requests_total{decision="allow",reason="no_auth",requirement="open",mode="enforce"} 2"#,
        r#"keybound_requests_total{decision="deny",reason="insufficient_scope",requirement="payments",mode="report"} 1"#,
        r#"keybound_requests_total{decision="deny",reason="missing_credentials",requirement="default",mode="enforce"} "#,
        r#"keybound_requests_total{decision="allow",reason="cors_preflight",requirement="none",mode="enforce"} 1"#,
        r#"keybound_requests_total{decision="allow",reason="no_credentials",requirement="rule_1",mode="enforce"} 1"#,
    ] {
        let series = format!("{}{series}", Adapter::from_env().prometheus_prefix());
        assert!(prom.contains(&series), "{series} in\n{prom}");
    }
    let series_type = format!(
        "# TYPE {}keybound_requests_total counter",
        Adapter::from_env().prometheus_prefix()
    );
    assert!(prom.contains(&series_type), "{prom}");

    // The access log reads the decision from filter state.
    assert!(
        eventually(10, || std::fs::read_to_string(&access_log).is_ok_and(|l| l.contains(
            "/pay/1 200 decision=deny reason=insufficient_scope requirement=payments mode=report sub=-"
        ) && l
            .contains(
                "/api/x 200 decision=allow reason=ok requirement=default mode=enforce sub=alice"
            ))),
        "{}",
        std::fs::read_to_string(&access_log).unwrap_or_default()
    );

    // 7. RFC 9728: the metadata document, and the challenge pointing at it.
    let r = get(&envoy, "/.well-known/oauth-protected-resource", &[]);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["resource"], API);
    assert_eq!(doc["authorization_servers"], json!([common::ISS]));
    assert_eq!(
        doc["dpop_bound_access_tokens_required"],
        json!(false),
        "legacy allows bearer"
    );
    let r = get(&envoy, "/api", &[]);
    assert!(
        r.header("www-authenticate").is_some_and(|w| w.contains(&format!(
            r#"resource_metadata="{API}/.well-known/oauth-protected-resource""#
        ))),
        "{r:?}"
    );
}

/// Issue 13, item 6: secrets from the VM's environment (`vm_config.environment_variables`), never
/// only inline; a missing variable refuses the configuration and names the field.
#[test]
fn nonce_secrets_come_from_the_vm_environment() {
    let up = Upstream::start().unwrap();
    let cfg = config(json!({"dpop": {"nonce": {"mode": "required", "secrets_from_env": ["KB_NONCE_SECRET"]}}}));
    let opts = EnvoyOptions {
        vm_env: vec![(
            "KB_NONCE_SECRET".into(),
            "ZW52LW5vbmNlLXNlY3JldC1lbnYtbm9uY2Utc2VjcmV0LWVudg".into(),
        )],
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&cfg, &up, &opts).unwrap();
    let key = p256(2);
    let t = dpop_token(&key);
    let r = dpop_call(&envoy, &key, &t, "/api", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("dpop-nonce").is_some(), "{r:?}\n{}", envoy.log_tail());
    drop(envoy);
    let (ok, log) = validate_with(&cfg, &EnvoyOptions::default()).unwrap();
    assert!(
        !ok,
        "a configuration whose secret is not in the environment must be refused"
    );
    assert!(
        log.contains("dpop.nonce.secrets_from_env[0]") && log.contains("KB_NONCE_SECRET"),
        "{log}"
    );
}
