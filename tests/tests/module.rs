//! The native module against the Envoy the project installs, before any request: every C ABI
//! callback it imports is exported by that Envoy (a wrong name fails here, not in Envoy), every
//! hook it exports is one Envoy knows, and it is linked for immediate binding, so an Envoy
//! without one of its callbacks refuses to load it with "undefined symbol: <name>".
//! The request tests (envoy, keys, mtls, behind_proxy, seams, headers, conformance, gateway,
//! instances) run against it with `KEYBOUND_ADAPTER=module` (`cargo xtask test` does); a wrong
//! attribute id, metadata source or callout signature fails them (the mTLS, XFCC, route and JWKS
//! cases read exactly those).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed step fails the test"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use keybound_e2e::{Adapter, EnvoyOptions, envoy_module, root, validate_with};

/// The real Envoy executable (`.tools/envoy/bin/envoy` is the PyPI package's launcher).
fn envoy_executable() -> PathBuf {
    let lib = root().join(".tools/envoy/lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no site-packages/envoy/_bin/envoy under {}", lib.display()))
}

/// Dynamic symbols of `file` (`nm -D`), defined or undefined.
fn dynamic_symbols(file: &Path, defined: bool) -> BTreeSet<String> {
    let out = Command::new("nm")
        .arg("-D")
        .arg(if defined { "--defined-only" } else { "--undefined-only" })
        .arg(file)
        .output()
        .expect("nm (binutils) runs");
    assert!(
        out.status.success(),
        "nm {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_owned())
        .collect()
}

/// The HTTP filter hooks Envoy 1.40 resolves with an error when missing
/// (`source/extensions/filters/http/dynamic_modules/filter_config.cc`), and the program init.
const REQUIRED_HOOKS: [&str; 21] = [
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
];

#[test]
fn every_callback_the_module_imports_is_exported_by_the_installed_envoy() {
    let module = envoy_module().unwrap();
    let envoy = dynamic_symbols(&envoy_executable(), true);
    let imported: Vec<String> = dynamic_symbols(&module, false)
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_"))
        .collect();
    assert!(
        imported
            .iter()
            .any(|s| s == "envoy_dynamic_module_callback_http_send_response"),
        "{imported:?}"
    );
    let missing: Vec<&String> = imported.iter().filter(|s| !envoy.contains(*s)).collect();
    assert!(missing.is_empty(), "callbacks this Envoy does not export: {missing:?}");
}

#[test]
fn every_hook_the_module_exports_is_one_envoy_knows_and_the_required_ones_are_there() {
    let module = envoy_module().unwrap();
    let exported: BTreeSet<String> = dynamic_symbols(&module, true)
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_on_"))
        .collect();
    // Envoy links one module statically (Hickory DNS), its hooks prefixed by its name: the
    // hook names this Envoy calls.
    let known: BTreeSet<String> = dynamic_symbols(&envoy_executable(), true)
        .into_iter()
        .filter_map(|s| s.strip_prefix("hickory_dns_static_").map(str::to_owned))
        .filter(|s| s.starts_with("envoy_dynamic_module_on_"))
        .collect();
    let unknown: Vec<&String> = exported.iter().filter(|s| !known.contains(*s)).collect();
    assert!(unknown.is_empty(), "hooks this Envoy never calls: {unknown:?}");
    let missing: Vec<&str> = REQUIRED_HOOKS
        .iter()
        .copied()
        .filter(|h| !exported.contains(*h))
        .collect();
    assert!(
        missing.is_empty(),
        "hooks Envoy requires and the module lacks: {missing:?}"
    );
}

#[test]
fn the_module_binds_every_callback_at_load() {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(envoy_module().unwrap())
        .output()
        .expect("readelf (binutils) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BIND_NOW") || text.contains("Flags: NOW"), "{text}");
}

/// What only the wasm host has is refused when Envoy loads the module, naming the field:
/// `"verifier": "envoy"` (the wasm host's `verify_signature` foreign function); `"rust"` and
/// the default load.
#[test]
fn the_wasm_hosts_verifier_is_refused_at_load_naming_the_field() {
    let opts = EnvoyOptions {
        adapter: Some(Adapter::Module),
        ..EnvoyOptions::default()
    };
    use keybound_core::jws::{P256Signer, Signer};
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    let jwk: serde_json::Value = serde_json::from_str(&key.public_key().to_json()).unwrap();
    let config = |verifier: &str| {
        serde_json::json!({"issuers": [{"issuer": "https://as.example.com", "audiences": ["https://rs.example.com"],
            "jwks": {"keys": [jwk]}}], "dpop": {"origins": ["http://rs.example.com"]}, "verifier": verifier})
        .to_string()
    };
    let (ok, out) = validate_with(&config("envoy"), &opts).unwrap();
    assert!(!ok, "accepted");
    assert!(out.contains("invalid configuration `verifier`"), "{out}");
    for verifier in ["rust", "auto"] {
        let (ok, out) = validate_with(&config(verifier), &opts).unwrap();
        assert!(ok, "{verifier}: {out}");
    }
}
