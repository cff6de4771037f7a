//! The filter as Istio gets it: the `plugin.wasm` of the OCI image `cargo xtask package` builds,
//! after a round trip through a registry, loaded by the real Envoy with the configuration of each
//! WasmPlugin in `envoy/istio/`.
//!
//! Ignored in a plain `cargo test`: the package step of `cargo xtask test` builds the image,
//! pushes it to a local registry, pulls it back and runs this test with
//! `KEYBOUND_OCI_PLUGIN_WASM` set to the pulled-back `plugin.wasm`.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test on bad fixtures"
)]

use std::path::PathBuf;

mod common;

use keybound_e2e::{EnvoyOptions, bootstrap, free_port, root, validate_yaml};
use serde::Deserialize;
use serde_json::{Value, json};

/// Environment variables of a VM.
type VmEnv = Vec<(String, String)>;

/// The `pluginConfig` of every WasmPlugin in `envoy/istio/`, as the JSON Istio hands the
/// filter, with the plugin's file name and the environment Istio gives its VM.
fn wasmplugin_configs() -> Vec<(String, Value, VmEnv)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("envoy/istio"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut configs = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if doc["kind"] == "WasmPlugin" {
                configs.push((
                    name.clone(),
                    serde_json::to_value(&doc["spec"]["pluginConfig"]).unwrap(),
                    common::wasmplugin_vm_env(&doc["spec"]),
                ));
            }
        }
    }
    configs
}

/// `envoy --mode validate` with the module at `wasm` and this configuration (its JWKS cluster
/// defined, as Istio's ServiceEntry would).
fn validate(wasm: &str, config: &Value, vm_env: &[(String, String)]) -> (bool, String) {
    let cluster = config["issuers"][0]["jwks_cluster"].as_str().unwrap().to_owned();
    let opts = EnvoyOptions {
        clusters: vec![(cluster, free_port().unwrap())],
        vm_env: vm_env.to_vec(),
        ..EnvoyOptions::default()
    };
    let yaml = bootstrap(
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
        Some((wasm, &config.to_string())),
        &opts,
    );
    validate_yaml(&yaml).unwrap()
}

#[test]
#[ignore = "run by `cargo xtask test` (package step), which pulls the image back and sets KEYBOUND_OCI_PLUGIN_WASM"]
fn the_pulled_back_plugin_loads_in_envoy_with_each_wasmplugin_config() {
    let wasm = std::env::var("KEYBOUND_OCI_PLUGIN_WASM").unwrap_or_else(|_| {
        panic!("KEYBOUND_OCI_PLUGIN_WASM is not set: run `cargo xtask test --only package`, which sets it")
    });
    let configs = wasmplugin_configs();
    let names: Vec<&str> = configs.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(names, ["wasmplugin-gateway.yaml", "wasmplugin-workload.yaml"]);
    for (name, config, vm_env) in &configs {
        let (ok, out) = validate(&wasm, config, vm_env);
        assert!(ok, "{name}: {out}");
        // The module really ran its configuration check: a typo is refused, naming the field.
        let mut typo = config.clone();
        typo["dpop"]["orgins"] = json!(["https://api.example.com"]);
        let (ok, out) = validate(&wasm, &typo, vm_env);
        assert!(!ok && out.contains("orgins"), "{name}: {out}");
    }
}
